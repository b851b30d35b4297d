"""kdkit-logit-mse: an example third-party KD method for kdkit."""
