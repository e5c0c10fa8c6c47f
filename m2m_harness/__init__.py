"""Run this project's apps (or any Flask `module:create_app()`) as real processes for tests,
load tests and the demo; see `launcher`."""
