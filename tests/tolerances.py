"""Tolerances shared by the tests that compare two scorings of the same windows."""

# A window's score is the same whichever inference path, batch or process scored it only to float32
# round-off (models/inference.py): every comparison of scores from two scorings uses this tolerance.
SCORE_RTOL = 1e-5
