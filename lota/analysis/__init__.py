"""What the results say: statistics over test items and seeds, the comparisons of methods, and the
paper's claims answered from them."""
