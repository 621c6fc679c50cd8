"""The one access path: who is acting (``Actor``) and what they may read and write."""
