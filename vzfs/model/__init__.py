"""A domain's definition, shared by the daemon and the controller: config, mounts, id maps, lifecycle states (pure)."""
