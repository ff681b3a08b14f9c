"""The wire contract shared by agent/ and broker/: topics, the event envelope, message models.

Both sides import it; it imports neither. Its only I/O is ``transport``: paho-mqtt driven from asyncio.
"""
