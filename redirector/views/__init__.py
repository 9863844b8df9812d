"""Pure renderers of operator views: status page, JSON, explain."""
