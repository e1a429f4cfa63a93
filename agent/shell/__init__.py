"""The remote shell on the device: a real pty whose bytes cross the session tunnel (see protocol.shell)."""
