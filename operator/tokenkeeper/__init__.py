"""tokenkeeper keeps OAuth 2.0 client-credentials access tokens fresh in Secrets.

The package is split by responsibility: ``endpoint`` talks to token endpoints,
``schedule`` decides when to refresh, ``target`` builds and reads the managed
Secret, ``status`` reports conditions, ``reconcile`` ties one object's pass
together, ``keeper`` runs the per-object timers and ``handlers`` wires it all
into kopf.
"""

__version__ = "0.1.0"
USER_AGENT = f"tokenkeeper/{__version__}"
