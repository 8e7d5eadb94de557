"""The TF-IDF + logistic-regression baseline on the built-in `sentiment` split (issue 16), so
readers can place the classifiers' scores: character 1-2-gram TF-IDF (the reviews are Chinese,
unsegmented), logistic regression with C chosen on dev, accuracy and macro-F1 on test.

    pip install -e ".[bench]"      # scikit-learn
    python benchmarks/sentiment_baseline.py [--max-train 2000]

Prints one row for the labelled budget given (default: the cpu profile's 2,000 reviews) and one
for every training review.
"""

from __future__ import annotations

import argparse
import time

from distill.classify import classification_metrics
from distill.textdata import load_text_dataset

C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)


def fit_and_score(train, dev, test, labels):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    x_train = vec.fit_transform(train.texts)
    best = None
    for c in C_GRID:  # chosen on dev macro-F1
        clf = LogisticRegression(C=c, max_iter=2000).fit(x_train, train.labels)
        dev_f1 = classification_metrics(dev.labels, list(clf.predict(vec.transform(dev.texts))), labels)["macro_f1"]
        if best is None or dev_f1 > best[0]:
            best = (dev_f1, c, clf)
    dev_f1, c, clf = best
    test_m = classification_metrics(test.labels, list(clf.predict(vec.transform(test.texts))), labels)
    return dev_f1, c, test_m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-train", type=int, default=2000)
    args = ap.parse_args()
    print("| training reviews | C (dev) | dev macro-F1 | test accuracy | test macro-F1 | seconds |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for cap in (args.max_train, None):
        t0 = time.time()
        ds = load_text_dataset({"name": "sentiment", "max_train": cap})
        dev_f1, c, m = fit_and_score(ds.train, ds.dev, ds.test, ds.labels)
        print(f"| {len(ds.train):,} | {c} | {dev_f1:.4f} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {time.time() - t0:.1f} |")


if __name__ == "__main__":
    main()
