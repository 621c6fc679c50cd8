"""Who is who and how they prove it: organizations, accounts, sign-in, MFA, sessions."""
