"""nn.Modules and LightningModules. Importing the package registers the student with HF's Auto* classes."""

from modules import student as student  # noqa: F401  (registration with AutoConfig/AutoModel happens on import)
