"""`python -m gateway.mock_upstream [--host H] [--port P]`: serve the mock on a socket."""
from gateway.mock_upstream.server import main

main()
