"""The batch pipeline: read -> validate -> window -> infer -> score -> write."""
