"""Step classes that generated configs name in their ``handler`` parameter.

Generic steps (``network``, ``convert``, ``pipeline``) serve most models; a model adds a
module here only for logic its config cannot express.
"""
