"""What a running process needs beside the wire contract: the paho transport driven from asyncio, the
reconnect backoff, the injectable clock and sd_notify. agent/ and broker/ use it; protocol/ and drivers/ never do."""
