"""``import modules.auto``: registers every model type the project saves with transformers' Auto* classes, so a saved
dir loads with ``AutoModel*.from_pretrained(dir)``: the student template (``distill_student``: base, pre-training,
masked LM, sequence classification, question answering) the AdaBERT child (``adabert``: sequence
classification) and structurally pruned BERT (``pruned_bert``: base, sequence classification)."""

from modules import adabert as adabert  # noqa: F401  (registers model_type "adabert" on import)
from modules import pruned_bert as pruned_bert  # noqa: F401  (registers model_type "pruned_bert" on import)
from modules import student as student  # noqa: F401  (registers model_type "distill_student" on import)
