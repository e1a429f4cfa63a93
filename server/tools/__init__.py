"""Tools without the screen (issue 16): processes and services of a device, through its control channel."""
