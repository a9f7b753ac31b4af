from django import forms

from .models import Album, Artist


class AlbumForm(forms.Form):
    """Adds an album; the artist is typed by name and created on first use."""

    title = forms.CharField(max_length=200)
    artist = forms.CharField(max_length=200)
    year = forms.IntegerField(min_value=1900, max_value=2100)

    def save(self):
        artist, _ = Artist.objects.get_or_create(name=self.cleaned_data["artist"].strip())
        return Album.objects.create(
            title=self.cleaned_data["title"].strip(),
            year=self.cleaned_data["year"],
            artist=artist,
        )
