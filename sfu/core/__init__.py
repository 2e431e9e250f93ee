"""Sans-I/O forwarding and policy cores: every method takes `now`; nothing here does I/O."""
