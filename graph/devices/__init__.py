"""Devices: lookup by identifier, the account's device list, a device's history and recipes."""
