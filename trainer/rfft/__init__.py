"""RFFT: Reliable Feedback Fine-Tuning of the ControlNet with RFNet's feedback (docs/design.md, RFFT)."""
