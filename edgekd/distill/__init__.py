"""Distillation: KD losses (usable in your own loop), the teacher-output cache and the trainer."""
