"""ARIA back: the shared domain package.

Every fact that data preparation, training, serving, evaluation, publishing and tests share lives
here: the measurements and their thresholds (`aria.domain`), the diagnostic JSON schema
(`aria.schema`), the prompts of the two calls (`aria.prompts`), the settings (`aria.settings`) and
the typed client (`aria.client`). Pure modules import no torch.
"""

__version__ = "0.1.0"
