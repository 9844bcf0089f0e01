"""The annotator networks written for this project from the key layout of lllyasviel/Annotators'
files (so those files load as they are), with the code that runs each as a preprocessor module."""
