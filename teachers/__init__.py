"""Teachers: BERT-family encoders with a CRF, BiLSTM-CRF or softmax head."""
