"""Tools without the screen (issue 16): processes and systemd services, answered over the control channel."""
