"""Pure decision functions: from a port or VIF and a host inventory to a plan.

Nothing in this package touches the host; every function here is tested with
plain values.
"""
