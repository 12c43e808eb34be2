"""The privacy core: person descriptors become anonymous group occurrences and protected counts.

Public API used by the processor::

    from pipeline.privacy import (PrivacyParams, Anonymizer, pad_with_fictitious,
                                  AGE_BANDS, age_to_band, protect_demographic_counts)

See docs/PRIVACY.md for what each mechanism guarantees and the measured figures.
"""

from pipeline.privacy.anonymizer import Anonymizer
from pipeline.privacy.demographics import AGE_BANDS, GENDERS, UNKNOWN, age_to_band, protect_demographic_counts
from pipeline.privacy.fictitious import WINDOW_MARKER_GROUP, pad_with_fictitious
from pipeline.privacy.params import ParamsError, PrivacyParams

__all__ = [
    "AGE_BANDS",
    "GENDERS",
    "UNKNOWN",
    "Anonymizer",
    "ParamsError",
    "PrivacyParams",
    "age_to_band",
    "pad_with_fictitious",
    "WINDOW_MARKER_GROUP",
    "protect_demographic_counts",
]
