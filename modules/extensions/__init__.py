"""Extensions: finding them on disk (loader), and later the typed hook API and the A1111 adapter.

The loader half is torch-free: `discovery` lists extensions and their files, `ordering` applies
metadata.ini's Before/After, `installer` runs install.py, `preload` runs preload.py before the
final flag parse, `script_import` imports one file in isolation, `git_install` clones from a URL.
"""
