"""The WSGI entry inside the package, so gunicorn finds it from any folder:
`gunicorn -c python:gateway.gunicorn_conf gateway.wsgi:app` (what `gateway serve` runs)."""
from gateway import create_app

app = create_app()
