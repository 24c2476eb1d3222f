"""Notifications: FCM push and webhooks for faults over threshold."""
