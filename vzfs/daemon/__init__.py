"""The daemon: the control filesystem's owner, its model of the domains, and their controllers as it sees them."""
