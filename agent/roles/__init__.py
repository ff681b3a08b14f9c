"""Roles: what an agent drives. Each role is one module; the registry below is explicit."""
