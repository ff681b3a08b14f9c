"""The fleet simulator: thousands of agents of every role in one process, on one event loop.

Each device is the real ``agent.agent.Agent`` over its simulated driver twins (receipt printer, QR scanner,
keypad), configured by the demo's builders (hallfleet/demo_scenario.py); what the people and the faults do
comes from a scenario file (hallfleet/fleet/scenarios/*.toml), in simulated time (runtime.clock.ScaledClock).
"""
