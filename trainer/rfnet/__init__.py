"""rfad-train rfnet and eval-rfnet: training and evaluating the RFNet judge."""
