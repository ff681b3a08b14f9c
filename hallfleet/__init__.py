"""hallfleet: the CLI and what composes both sides (the demo). The parts live in agent/, broker/,
drivers/, protocol/ and provisioning/."""
