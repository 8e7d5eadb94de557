"""Students: ``bilstm-crf`` (students/bilstm_crf.py) and ``bert-small`` (students/bert_small.py),
trained by students/train.py with the distillation losses of distill/kd.py."""
