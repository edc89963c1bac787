"""nn.Modules and LightningModules, and the schemas of their config groups.

Importing the package imports nothing else, so the import-light schema modules here (``modules.student_spec``,
``modules.teacher_config``, ``modules.distillation_config``) load without torch: ``python run.py --help`` and
shell completion compose the config with them. ``import modules.auto`` registers every model type the project
saves with HF's Auto* classes (the student template ``distill_student`` and the AdaBERT child ``adabert``), so
a saved model dir loads with ``AutoModel*.from_pretrained(dir)``; importing ``modules.student`` or
``modules.adabert`` registers that one.
"""
