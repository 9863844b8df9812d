"""End-to-end tests across layers: faults, outages, hostile input, soak, real dnf/nginx/chromium."""
