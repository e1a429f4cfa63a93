"""Scripts of self-service fixes (issue 18): stored by SHA-256, served to the devices a fix names."""
