"""1:1 video consultations: a durable queue of customers and advisors (``domain``,
``store``), the service that runs it next to commerce (``service``) and its HTTP API
(``http``). See docs/consultation.md."""
