"""What the results say: statistics over test items and seeds, the comparisons of methods, the paper's
claims answered from them, and the report that shows them (its results, Markdown and plots)."""
