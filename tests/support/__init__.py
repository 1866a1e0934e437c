"""What the tests share: the identity provider (``identity``), the API callers and a team in
every role (``api``), the database helpers (``database``) and the real servers the slow tests
start (``servers``: one ``free_port``, one way to start ``flyswatter serve``); a real Keycloak
(``keycloak_server``), tokens got as clients get them (``keycloak_flows``) and headless Chromium
signing in from Swagger UI (``browser``)."""
