"""Stand-ins for the platform's other services, for the demo (``bin/run``) and the compose
stack; never imported by the service."""
