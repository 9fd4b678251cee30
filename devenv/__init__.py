"""Local development environment for tokenkeeper's integration tests and demo.

Each module runs one real service on loopback: a Kubernetes control plane,
Keycloak, and a scriptable OAuth2 token endpoint.
"""
