"""nn.Modules and LightningModules.

Importing the package registers every model type the project saves with HF's Auto* classes, so a saved model
directory loads with ``AutoModel*.from_pretrained(dir)`` after ``import modules``: the student template
(``distill_student``) and the AdaBERT child (``adabert``).
"""

from modules import adabert as adabert  # noqa: F401  (registers model_type "adabert" on import)
from modules import student as student  # noqa: F401  (registers model_type "distill_student" on import)
