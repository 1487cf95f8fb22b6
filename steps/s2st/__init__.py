"""Speech-to-speech translation (S2ST): CVSS-style pairs (`cvss`), their offline fixture
(`fixture`), preparing the real downloads (`prepare`), and the supervised fine-tuning data
(`sft_data`). The fine-tune step itself is `steps.training.finetune`."""
