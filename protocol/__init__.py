"""The wire contract shared by agent/ and broker/: topics, the event envelope, message models and their bounds.

Both sides import it; it imports neither, and nothing of a running process: no MQTT client, no config loading,
no files (tests/test_layers.py). The transport and the config plumbing are runtime/'s; the config base is config/.
"""
