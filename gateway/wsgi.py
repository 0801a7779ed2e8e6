"""The WSGI entry inside the package, so gunicorn finds it from any folder:
`gunicorn -c python:gateway.gunicorn_conf gateway.wsgi:app` (what `gateway serve` runs)."""
from gateway import create_app
from gateway.services.accounting import pricing

app = create_app()
pricing.warm()      # each worker loads this itself; the first request should not wait ~0.5 s
