from airflow_provider_autocalls.notifications.autocalls import AutocallsNotifier, send_autocalls_notification

__all__ = ["AutocallsNotifier", "send_autocalls_notification"]
