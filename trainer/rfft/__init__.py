"""RFFT: Reliable Feedback Fine-Tuning of the ControlNet with RFNet's feedback (DESIGN.md section 6)."""
