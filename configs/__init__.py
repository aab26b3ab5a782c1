"""The papers' recipes as JSON files (`assemblenet train --config NAME`); see docs/training.md."""
