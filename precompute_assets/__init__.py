"""precompute-assets. Importing the package silences known third-party console noise (console_noise)."""

from precompute_assets import console_noise

console_noise.install()
