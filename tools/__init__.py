"""Development tools: the local emulator launcher and the demo."""
