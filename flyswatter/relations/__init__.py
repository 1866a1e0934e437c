"""Relations between issues: blockers, duplicates, related issues and sub-issues."""
