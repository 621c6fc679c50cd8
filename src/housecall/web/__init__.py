"""Server-rendered pages: the Jinja environment, the layout, static files, CSRF and page helpers."""
